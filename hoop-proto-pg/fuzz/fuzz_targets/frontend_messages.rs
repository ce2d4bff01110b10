//! Client messages: the typed parsers, then the session state machine fed
//! with whatever parsed.
#![no_main]

use hoop_proto_pg::{extended::Target, message::FrontendMessage, session::SessionState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut session = SessionState::new(true);
    let mut rest = data;
    // A sequence of (tag, len:u8, body) records.
    while let [tag, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let Ok(message) = FrontendMessage::parse(*tag, body) else { continue };
        match message {
            FrontendMessage::Query(q) => session.client_query(q.sql),
            FrontendMessage::Parse(p) => session.client_parse(&p),
            FrontendMessage::Bind(b) => {
                let _ = b.result_formats().count();
                session.client_bind(&b);
            }
            FrontendMessage::Describe(d) => session.client_describe(&d),
            FrontendMessage::Execute(e) => {
                if !session.portal_description_expected(e.portal) {
                    session.injected_describe_portal(e.portal);
                }
                session.client_execute(e.portal);
            }
            FrontendMessage::Close(c) => {
                let _ = c.target == Target::Portal;
                session.client_close(&c);
            }
            FrontendMessage::Sync => session.client_sync(),
            FrontendMessage::FunctionCall(_) => session.client_function_call(),
            _ => {}
        }
        let _ = session.current_result();
    }
});
