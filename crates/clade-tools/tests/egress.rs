//! `http.request` against real loopback servers: refused by default, reachable with a
//! `private_network` grant, redirects to another host not followed, sizes capped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)]

use std::io::{Read, Write};
use std::net::TcpListener;

use clade_tools::builtin::HttpRequest;
use clade_tools::{CallContext, Constraints, Tool};
use serde_json::json;

/// Answers every connection with `response`, forever.
fn serve(response: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

fn granted(private_network: bool) -> CallContext {
    CallContext {
        granted: Constraints { private_network, ..Constraints::default() },
        ..CallContext::default()
    }
}

#[tokio::test]
async fn private_addresses_need_a_grant_and_redirects_stay_on_the_host() {
    let ok = serve("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello".into());
    let url = format!("http://127.0.0.1:{ok}/");
    let refused =
        HttpRequest.call(json!({ "url": url }), &granted(false)).await.unwrap_err().to_string();
    assert!(refused.contains("loopback"), "{refused}");
    let answered = HttpRequest.call(json!({ "url": url }), &granted(true)).await.unwrap();
    assert!(answered.starts_with("status 200") && answered.ends_with("hello"), "{answered}");

    // Same host: followed. Another host (localhost vs 127.0.0.1): not followed.
    let same = serve(format!(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{ok}/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ));
    let followed = HttpRequest
        .call(json!({ "url": format!("http://127.0.0.1:{same}/") }), &granted(true))
        .await
        .unwrap();
    assert!(followed.ends_with("hello"), "{followed}");
    let other = serve(format!(
        "HTTP/1.1 302 Found\r\nlocation: http://localhost:{ok}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ));
    let stopped = HttpRequest
        .call(json!({ "url": format!("http://127.0.0.1:{other}/") }), &granted(true))
        .await
        .unwrap_err()
        .to_string();
    assert!(stopped.contains("another host"), "{stopped}");

    // A huge body is cut at the cap.
    let big = serve(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        3 << 20,
        "x".repeat(3 << 20)
    ));
    let capped = HttpRequest
        .call(json!({ "url": format!("http://127.0.0.1:{big}/") }), &granted(true))
        .await
        .unwrap();
    assert!(capped.ends_with("[truncated at 1 MiB]") && capped.len() < (1 << 20) + 200);

    // Metadata addresses stay refused even with the grant.
    let metadata = HttpRequest
        .call(json!({ "url": "http://169.254.169.254/" }), &granted(true))
        .await
        .unwrap_err()
        .to_string();
    assert!(metadata.contains("metadata"), "{metadata}");
}
