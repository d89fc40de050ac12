//! The server's real receive path (connection table, address binding, state
//! machines) fed arbitrary datagrams from arbitrary source ports. Sources are
//! mapped onto 127.0.0.1 ports where nothing listens, so whatever the server
//! answers stays on this machine.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use liveseq::{Params, Server};

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let params = Params {
            epoch_millis: 5,
            epoch_limit: 3,
            window_size: 4,
            max_unacked_messages: 4,
            ..Params::default()
        };
        Server::builder()
            .params(params)
            .max_connections(16)
            .bind("127.0.0.1:0")
            .expect("bind")
    })
}

fuzz_target!(|data: &[u8]| {
    let server = server();
    // Records: [port selector, length, bytes...].
    let mut rest = data;
    while let [port, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 47000 + u16::from(*port % 8)));
        server.fuzz_inject(from, &tail[..take]);
        rest = &tail[take..];
    }
    // Keep the read side drained so the inbox stays small.
    while server.read_timeout(std::time::Duration::ZERO).is_ok() {}
    assert!(server.totals().active <= 16);
});
