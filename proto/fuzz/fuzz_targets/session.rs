//! Feeds arbitrary bytes to a server session (as several streams) and to a connected client:
//! the state machines must never panic, whatever a peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_proto::{
    Client, ClientConfig, DeviceId, ExchangeId, Label, Server, ServerConfig, ServerEvent, Time,
};

fuzz_target!(|data: &[u8]| {
    let mut server = Server::new(ServerConfig::default());
    let mut client = match (DeviceId::new("fuzz"), Label::new("c")) {
        (Ok(d), Ok(l)) => match Client::new(ClientConfig::new(d, l.clone(), l.clone(), l), Time(0))
        {
            Ok(c) => c,
            Err(_) => return,
        },
        _ => return,
    };
    // Stream selector byte, then a length byte, then that many bytes; repeated.
    let mut rest = data;
    while let [sel, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (piece, next) = tail.split_at(n);
        rest = next;
        let id = ExchangeId(u64::from(sel % 4));
        match sel % 8 {
            0..4 => {
                let _ = server.handle_data(id, piece);
                while let Some(ev) = server.poll_event() {
                    if let ServerEvent::Hello { exchange, .. } = ev {
                        let _ = server.accept(exchange);
                    }
                }
            }
            4 | 5 => {
                let _ = client.handle_data(Time(1), id, piece);
            }
            6 => {
                let _ = server.handle_stream_end(id);
            }
            _ => {
                let _ = client.handle_stream_end(id);
            }
        }
        while server.poll_transmit().is_some() {}
        while client.poll_transmit().is_some() {}
        while client.poll_event().is_some() {}
    }
});
