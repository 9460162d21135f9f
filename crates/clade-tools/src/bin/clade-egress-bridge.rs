//! The egress bridge as a program of its own (`clade __egress-bridge` is the same): runs inside
//! a network-granted sandbox, carrying connections to `LISTEN` over the proxy's Unix socket.
//!
//! Usage: `clade-egress-bridge LISTEN SOCKET`.

#![allow(clippy::print_stderr)]

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, socket] = args.as_slice() else {
        eprintln!("usage: clade-egress-bridge LISTEN SOCKET");
        return std::process::ExitCode::from(2);
    };
    let Ok(listen) = listen.parse() else {
        eprintln!("clade-egress-bridge: {listen:?} is not an address:port");
        return std::process::ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("clade-egress-bridge: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(clade_tools::egress::bridge(listen, socket.into())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("clade-egress-bridge: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
