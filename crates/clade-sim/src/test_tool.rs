//! A tool whose answer a test decides, for the simulator's tests and the runtime's own.

/// A tool for tests: `run` decides what a call returns (or panics, for a buggy tool), and
/// `owner`, when set, is the only agent handle it is available to.
pub struct TestTool {
    pub name: &'static str,
    pub owner: Option<&'static str>,
    pub run: fn() -> clade_tools::ToolResult,
}

impl TestTool {
    /// A tool named `name` that answers "it ran", for every agent.
    pub fn answering(name: &'static str) -> Self {
        Self { name, owner: None, run: || Ok("it ran".to_owned()) }
    }
}

impl clade_tools::Tool for TestTool {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "a tool for tests"
    }
    fn input_schema(&self) -> serde_json::Value {
        serde_json::json!({ "type": "object" })
    }
    fn available_to(&self, _tenant: &str, handle: &str) -> bool {
        self.owner.is_none_or(|owner| owner == handle)
    }
    fn call<'a>(
        &'a self,
        _args: serde_json::Value,
        _ctx: &'a clade_tools::CallContext,
    ) -> futures::future::BoxFuture<'a, clade_tools::ToolResult> {
        let run = self.run;
        Box::pin(async move { run() })
    }
}
