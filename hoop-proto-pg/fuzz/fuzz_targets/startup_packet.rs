//! Startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest).
#![no_main]

use hoop_proto_pg::startup::StartupPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(StartupPacket::Startup(m)) = StartupPacket::parse(data) {
        let _ = (m.user(), m.database(), m.application_name(), m.options(), m.major());
    }
});
