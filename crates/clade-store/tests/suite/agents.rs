use clade_core::{AgentConfig, Handle, TemplateName, Tenant};
use clade_store::{Error, NewAgent};

use super::harness::backends;

fn new(handle: &str) -> NewAgent {
    NewAgent {
        handle: Handle::parse(handle).unwrap(),
        display_name: None,
        config: AgentConfig::default(),
    }
}

#[tokio::test]
async fn create_show_list_delete() {
    for h in backends().await {
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let mut spec = new("ada");
        spec.display_name = Some("Ada L.".into());
        let ada = h.agents.create(tenant.id, spec).await.unwrap();
        assert_eq!(ada.display_name, "Ada L.", "{}", h.name);
        let bob = h.agents.create(tenant.id, new("bob")).await.unwrap();
        assert_eq!(bob.display_name, "bob", "display name defaults to the handle ({})", h.name);
        assert!(ada.id < bob.id, "ids are time-ordered ({})", h.name);

        let shown = h.store.agents(tenant.id).get("ada").await.unwrap();
        assert_eq!(shown, ada, "{}", h.name);

        let page1 = h.store.agents(tenant.id).list(None, 1).await.unwrap();
        let page2 = h.store.agents(tenant.id).list(Some("ada"), 10).await.unwrap();
        assert_eq!(
            page1.iter().map(|a| a.handle.as_str()).collect::<Vec<_>>(),
            ["ada"],
            "{}",
            h.name
        );
        assert_eq!(
            page2.iter().map(|a| a.handle.as_str()).collect::<Vec<_>>(),
            ["bob"],
            "{}",
            h.name
        );

        let deleted = h.agents.delete(tenant.id, "ada").await.unwrap();
        assert_eq!(deleted.id, ada.id);
        assert!(
            matches!(h.store.agents(tenant.id).get("ada").await, Err(Error::AgentNotFound(_))),
            "{}",
            h.name
        );
        assert!(
            matches!(h.agents.delete(tenant.id, "ada").await, Err(Error::AgentNotFound(_))),
            "{}",
            h.name
        );
        assert_eq!(h.store.agents(tenant.id).count().await.unwrap(), 1, "{}", h.name);
    }
}

#[tokio::test]
async fn duplicate_handle_is_refused_per_tenant_only() {
    for h in backends().await {
        let default = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let other = h.store.tenants().create("other").await.unwrap();
        h.agents.create(default.id, new("same")).await.unwrap();
        let err = h.agents.create(default.id, new("same")).await.unwrap_err();
        assert!(matches!(err, Error::HandleTaken(_)), "{}: {err}", h.name);
        // The same handle in another tenant is a different agent.
        let theirs = h.agents.create(other.id, new("same")).await.unwrap();
        let ours = h.store.agents(default.id).get("same").await.unwrap();
        assert_ne!(theirs.id, ours.id, "{}", h.name);
        // Tenants never see each other's agents.
        assert!(matches!(
            h.store.agents(other.id).get("only-default").await,
            Err(Error::AgentNotFound(_))
        ));
        h.agents.create(default.id, new("only-default")).await.unwrap();
        assert!(
            matches!(
                h.store.agents(other.id).get("only-default").await,
                Err(Error::AgentNotFound(_))
            ),
            "{}",
            h.name
        );
        assert_eq!(h.store.agents(other.id).list(None, 100).await.unwrap().len(), 1, "{}", h.name);
    }
}

#[tokio::test]
async fn bulk_create_is_all_or_nothing() {
    for h in backends().await {
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        h.agents.create(tenant.id, new("taken")).await.unwrap();
        let batch = (0..1200).map(|i| new(&format!("bulk-{i}"))).chain([new("taken")]).collect();
        assert!(h.store.agents(tenant.id).create_many(batch).await.is_err(), "{}", h.name);
        assert_eq!(
            h.store.agents(tenant.id).count().await.unwrap(),
            1,
            "{}: nothing partial",
            h.name
        );
        let batch = (0..1200).map(|i| new(&format!("bulk-{i}"))).collect();
        assert_eq!(h.store.agents(tenant.id).create_many(batch).await.unwrap().len(), 1200);
        assert_eq!(h.store.agents(tenant.id).count().await.unwrap(), 1201, "{}", h.name);
    }
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_fail_alone() {
    for h in backends().await {
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let before = h.store.write_stats();
        let mut tasks = Vec::new();
        for i in 0..300 {
            let agents = h.agents.clone();
            // Every third handle is requested twice: exactly one of each pair must win.
            let handle = format!("c-{}", if i % 3 == 0 { i / 3 * 3 + 1 } else { i });
            tasks.push(tokio::spawn(async move { agents.create(tenant.id, new(&handle)).await }));
        }
        let mut ok = 0;
        let mut taken = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::HandleTaken(_)) => taken += 1,
                Err(other) => panic!("{}: unexpected {other}", h.name),
            }
        }
        assert_eq!(ok, 200, "{}", h.name);
        assert_eq!(taken, 100, "{}", h.name);
        assert_eq!(h.store.agents(tenant.id).count().await.unwrap(), 200, "{}", h.name);
        // Concurrent writers shared commits: far fewer transactions than writes.
        let after = h.store.write_stats();
        let (commits, writes) = (after.commits - before.commits, after.writes - before.writes);
        assert_eq!(writes, 300, "{}", h.name);
        assert!(commits < 150, "{}: {commits} commits for {writes} writes", h.name);
    }
}

#[tokio::test]
async fn workspace_is_lazy_seeded_and_removed_with_the_agent() {
    for h in backends().await {
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let agent = h.agents.create(tenant.id, new("lazy")).await.unwrap();
        let path = h.agents.workspace_path(agent.id);
        assert!(!path.exists(), "{}: no directory before first use", h.name);
        let made = h.agents.workspace(&agent).unwrap();
        assert_eq!(made, path);
        let identity = std::fs::read_to_string(path.join("IDENTITY.md")).unwrap();
        assert!(identity.contains("Handle: lazy"), "{identity}");
        for file in ["SOUL.md", "USER.md"] {
            assert!(path.join(file).is_file(), "{file}");
        }
        h.agents.delete(tenant.id, "lazy").await.unwrap();
        assert!(!path.exists(), "{}: workspace removed with the agent", h.name);
    }
}

#[tokio::test]
async fn named_templates_must_exist() {
    for h in backends().await {
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let mut spec = new("templated");
        spec.config.template = TemplateName::parse("pirate").unwrap();
        let err = h.agents.create(tenant.id, spec.clone()).await.unwrap_err();
        assert!(matches!(err, Error::TemplateNotFound(_)), "{err}");
        let dir = h.data_dir.templates_dir().join("pirate");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("SOUL.md"), "Arr, I be {{name}}.").unwrap();
        let agent = h.agents.create(tenant.id, spec).await.unwrap();
        assert_eq!(agent.config.template.as_str(), "pirate");
        let reloaded = h.store.agents(tenant.id).get("templated").await.unwrap();
        assert_eq!(reloaded.config, agent.config, "{}: config round-trips", h.name);
        let ws = h.agents.workspace(&reloaded).unwrap();
        assert_eq!(std::fs::read_to_string(ws.join("SOUL.md")).unwrap(), "Arr, I be templated.");
    }
}

#[tokio::test]
async fn import_copies_persona_files_or_creates_nothing() {
    for h in backends().await {
        let tenant = h.store.tenants().named(Tenant::DEFAULT_NAME).await.unwrap();
        let src = tempfile::tempdir().unwrap();
        let dir = src.path().join("molty");
        std::fs::create_dir_all(dir.join("memory")).unwrap();
        std::fs::write(dir.join("SOUL.md"), "soul").unwrap();
        std::fs::write(dir.join("IDENTITY.md"), "- **Name:** Molty\n").unwrap();
        std::fs::write(dir.join("MEMORY.md"), "remember").unwrap();
        std::fs::write(dir.join("memory/2026-01-01.md"), "day").unwrap();
        std::fs::write(dir.join("notes.bin"), "ignored").unwrap();
        let agent = h.agents.import(tenant.id, &dir, None).await.unwrap();
        assert_eq!(agent.handle.as_str(), "molty");
        assert_eq!(agent.display_name, "Molty");
        let ws = h.agents.workspace_path(agent.id);
        assert_eq!(std::fs::read_to_string(ws.join("MEMORY.md")).unwrap(), "remember");
        assert_eq!(std::fs::read_to_string(ws.join("memory/2026-01-01.md")).unwrap(), "day");
        assert!(!ws.join("notes.bin").exists());

        // Importing again under the same handle fails and leaves no stray folder behind.
        let before = std::fs::read_dir(h.data_dir.workspaces_dir()).unwrap().count();
        let err = h.agents.import(tenant.id, &dir, None).await.unwrap_err();
        assert!(matches!(err, Error::HandleTaken(_)), "{err}");
        assert_eq!(std::fs::read_dir(h.data_dir.workspaces_dir()).unwrap().count(), before);

        // A folder without persona files is refused with a message naming what is expected.
        let empty = src.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = h.agents.import(tenant.id, &empty, None).await.unwrap_err().to_string();
        assert!(err.contains("SOUL.md"), "{err}");
        assert!(h.store.agents(tenant.id).get("empty").await.is_err());
    }
}
