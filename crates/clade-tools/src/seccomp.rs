//! The sandbox's seccomp filters, and the gateway's side of their notifications.
//!
//! A tool run's filter does not let the kernel kill a process that makes a forbidden system
//! call on its own: it hands the call to the gateway (`SECCOMP_RET_USER_NOTIF`). The gateway
//! reads which call and which process from the kernel's notification, records it, and kills
//! that process. So the record of a violation comes from the kernel, and nothing the command
//! prints, redirects or exits with can add one or hide one. Services (long-lived MCP servers)
//! keep a filter that kills outright.
//!
//! The filter is installed by the sandbox's init ([`crate::init`]) inside the sandbox, which
//! sends the listener descriptor to the gateway before any command starts.

// seccomp(2) with and without a listener and the notification ioctls have no safe wrapper: the
// unsafe code is these four calls, each over a buffer this module owns.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// System calls no tool needs and kernel exploits often use, by name.
pub const FORBIDDEN_SYSCALLS: &[(&str, libc::c_long)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("syslog", libc::SYS_syslog),
    ("quotactl", libc::SYS_quotactl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("vhangup", libc::SYS_vhangup),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
];

/// Which filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// The forbidden system calls and `ioctl(TIOCSTI)` (terminal injection).
    Online,
    /// The same, and opening an internet or packet socket (a run without a network grant has
    /// no network to reach, so trying is itself the violation; Unix sockets stay allowed).
    Offline,
    /// Creating a Unix socket fails with EACCES (not a violation: glibc tries the nscd socket
    /// on every name lookup and copes with a refusal). For services sharing the host's network
    /// namespace, and with it its abstract sockets; `socketpair` stays allowed.
    NoUnixSockets,
}

/// What a matching call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The kernel kills the process (services, which run without the init).
    Kill,
    /// The call waits for the gateway, which records it and kills the process.
    Notify,
}

/// The `SECCOMP_RET_TRACE` data seccompiler writes for [`Action::Notify`], rewritten to
/// `SECCOMP_RET_USER_NOTIF` (seccompiler has no such action).
const NOTIFY_MARK: u32 = 0x0c1a;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = 0x06;

/// The compiled filter; `None` when this architecture cannot have one.
pub(crate) fn program(kind: Filter, action: Action) -> Option<Vec<libc::sock_filter>> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH).ok()?;
    let domain_is = |domain: i32| {
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, domain as u64)
            .ok()
            .and_then(|cond| SeccompRule::new(vec![cond]).ok())
    };
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> = Default::default();
    let mut matched = match action {
        Action::Kill => SeccompAction::KillProcess,
        Action::Notify => SeccompAction::Trace(NOTIFY_MARK),
    };
    if kind == Filter::NoUnixSockets {
        rules.insert(libc::SYS_socket, vec![domain_is(libc::AF_UNIX)?]);
        matched = SeccompAction::Errno(libc::EACCES as u32);
    } else {
        rules.extend(FORBIDDEN_SYSCALLS.iter().map(|(_, n)| (*n, Vec::new())));
        let tiocsti =
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::TIOCSTI)
                .ok()?;
        rules.insert(libc::SYS_ioctl, vec![SeccompRule::new(vec![tiocsti]).ok()?]);
    }
    if kind == Filter::Offline {
        let mut domains = Vec::new();
        for domain in [libc::AF_INET, libc::AF_INET6, libc::AF_PACKET] {
            domains.push(domain_is(domain)?);
        }
        rules.insert(libc::SYS_socket, domains);
    }
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, matched, arch).ok()?;
    let program: seccompiler::BpfProgram = filter.try_into().ok()?;
    let notify = SECCOMP_RET_TRACE | NOTIFY_MARK;
    Some(
        program
            .iter()
            .map(|insn| libc::sock_filter {
                code: insn.code,
                jt: insn.jt,
                jf: insn.jf,
                k: if insn.code == BPF_RET_K && insn.k == notify {
                    libc::SECCOMP_RET_USER_NOTIF
                } else {
                    insn.k
                },
            })
            .collect(),
    )
}

/// The descriptor a confined run's program is executed through ([`exec_once`]): the highest
/// a confined run may hold (its `RLIMIT_NOFILE` is this number, soft and hard), so once the
/// program runs nothing can be put at it again (`open`, `dup2`, `F_DUPFD` and the like never
/// give a descriptor at or past the limit).
pub(crate) const EXEC_FD: i32 = 255;

/// A filter that refuses (`EPERM`) every `execve` and every `execveat` but one of the program
/// open at [`EXEC_FD`] (`execveat(EXEC_FD, "", …, AT_EMPTY_PATH)`): installed just before the
/// init executes a confined run's program that way, it lets that program run and start
/// nothing after, not even through the dynamic loader run as a program (which Landlock, seeing
/// only the loader executed, would let through). The filter cannot count: what makes the
/// `execveat` it allows a one-time one is that the descriptor is closed on exec and the run's
/// descriptor limit keeps any other file from taking its number.
pub(crate) fn exec_once() -> Option<Vec<libc::sock_filter>> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH).ok()?;
    let not = |arg: u8, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, value)
            .ok()
            .and_then(|cond| SeccompRule::new(vec![cond]).ok())
    };
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> = Default::default();
    rules.insert(libc::SYS_execve, Vec::new());
    rules.insert(
        libc::SYS_execveat,
        vec![not(0, EXEC_FD as u64)?, not(4, libc::AT_EMPTY_PATH as u64)?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .ok()?;
    let program: seccompiler::BpfProgram = filter.try_into().ok()?;
    Some(
        program
            .iter()
            .map(|insn| libc::sock_filter { code: insn.code, jt: insn.jt, jf: insn.jf, k: insn.k })
            .collect(),
    )
}

/// Installs `program` on the calling process, without a listener (`no_new_privs` must be set,
/// as the init sets it before its first filter). Makes no allocation: fit for between fork
/// and exec.
pub(crate) fn install(program: &[libc::sock_filter]) -> std::io::Result<()> {
    set_filter(program, 0).map(drop)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`: what the kernel returned.
fn set_filter(program: &[libc::sock_filter], flags: libc::c_ulong) -> std::io::Result<i64> {
    let len = u16::try_from(program.len())
        .map_err(|_| std::io::Error::other("the seccomp program is too long"))?;
    let fprog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: `fprog` points at `program`, alive for the call; the kernel copies it.
    let done = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if done < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(done)
}

/// The program as bytes, as bubblewrap's `--add-seccomp-fd` reads it.
pub(crate) fn to_bytes(program: &[libc::sock_filter]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    bytes
}

/// Installs `program` on the calling process (and everything it starts from now on) and
/// returns the listener its notifications arrive on. Sets `no_new_privs` first, as the kernel
/// requires of a process without `CAP_SYS_ADMIN`.
pub(crate) fn install_with_listener(program: &[libc::sock_filter]) -> std::io::Result<OwnedFd> {
    rustix::thread::set_no_new_privs(true)?;
    let fd = set_filter(program, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)?;
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("bad listener descriptor"))?;
    // SAFETY: the kernel just returned this new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A forbidden call a sandboxed process made, as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notification {
    pub(crate) id: u64,
    /// In the gateway's pid namespace.
    pub(crate) pid: u32,
    pub(crate) call: String,
}

/// Receives one pending notification (the listener polled readable).
pub(crate) fn receive(listener: BorrowedFd<'_>) -> std::io::Result<Notification> {
    // SAFETY: a zeroed plain-data struct, as the ioctl requires.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one `seccomp_notif` into `notif`, which outlives the call.
    let done = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut notif as *mut libc::seccomp_notif,
        )
    };
    if done < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Notification {
        id: notif.id,
        pid: notif.pid,
        call: call_name(i64::from(notif.data.nr), notif.data.args[0], notif.data.args[1]),
    })
}

/// Whether the process of notification `id` still waits on it (so its pid is still its own).
pub(crate) fn still_waiting(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64 from `id`, which outlives the call.
    unsafe {
        libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id as *mut u64)
            == 0
    }
}

/// The name of a filtered call, with the argument that made it one where that is the reason.
fn call_name(nr: i64, arg0: u64, arg1: u64) -> String {
    if let Some((name, _)) = FORBIDDEN_SYSCALLS.iter().find(|(_, n)| *n == nr) {
        return (*name).to_owned();
    }
    match nr {
        libc::SYS_ioctl if arg1 == libc::TIOCSTI => "ioctl(TIOCSTI)".to_owned(),
        libc::SYS_socket => {
            let domain = match i32::try_from(arg0) {
                Ok(libc::AF_INET) => "AF_INET",
                Ok(libc::AF_INET6) => "AF_INET6",
                Ok(libc::AF_PACKET) => "AF_PACKET",
                _ => "?",
            };
            format!("socket({domain}) without a network grant")
        }
        other => format!("system call {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_filters_return_user_notif_and_kill_filters_do_not() {
        let ret = |p: &[libc::sock_filter]| {
            p.iter().filter(|i| i.code == BPF_RET_K).map(|i| i.k).collect::<Vec<_>>()
        };
        let notify = program(Filter::Offline, Action::Notify).unwrap();
        assert!(ret(&notify).contains(&libc::SECCOMP_RET_USER_NOTIF));
        assert!(!ret(&notify).iter().any(|k| k & 0xffff_0000 == SECCOMP_RET_TRACE));
        let kill = program(Filter::Offline, Action::Kill).unwrap();
        assert!(!ret(&kill).contains(&libc::SECCOMP_RET_USER_NOTIF));
    }

    #[test]
    fn calls_are_named() {
        assert_eq!(call_name(libc::SYS_unshare, 0, 0), "unshare");
        assert_eq!(call_name(libc::SYS_ioctl, 1, libc::TIOCSTI), "ioctl(TIOCSTI)");
        assert_eq!(
            call_name(libc::SYS_socket, libc::AF_INET6 as u64, 0),
            "socket(AF_INET6) without a network grant"
        );
    }
}
