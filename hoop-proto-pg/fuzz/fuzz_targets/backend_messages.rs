//! Server messages: the typed parsers, the SASL rewrite, and the session
//! state machine's reply accounting (with some requests outstanding).
#![no_main]

use hoop_proto_pg::{
    auth::strip_channel_binding, extended::Parse, message::BackendMessage, rows::DataRow,
    session::SessionState,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut session = SessionState::new(true);
    session.client_parse(&Parse { name: "s", sql: "select 1", param_types: 0 });
    session.client_query("select 1; select 2");
    session.client_sync();
    let mut rest = data;
    while let [tag, len_hi, len_lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo])).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let _ = BackendMessage::parse(*tag, body);
        if *tag == b'R' {
            let _ = strip_channel_binding(body);
        }
        if let Ok(row) = DataRow::parse(body) {
            let rebuilt = DataRow::build(row.values());
            assert_eq!(&rebuilt[5..], body);
        }
        let _ = session.server_message(*tag, body);
        if let Some(r) = session.current_result() {
            if let Some(d) = r.row_description {
                assert_eq!(d.fields().count(), d.len());
            }
        }
    }
});
