//! The datagram decoder: never panics; what decodes re-encodes to something
//! that decodes to the same message; the integrity rules never panic and
//! never grow a payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveseq::proto::{Message, MsgType};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let mut encoded = Vec::new();
    msg.encode(&mut encoded);
    let again = Message::decode(&encoded).expect("our own encoding decodes");
    assert_eq!(again, msg);
    if msg.kind == MsgType::Data {
        let mut checked = msg.clone().into_owned();
        let before = checked.payload.len();
        if checked.verify_data() {
            assert_eq!(checked.payload.len() as u64, msg.size);
            assert!(checked.payload.len() <= before);
        }
    }
});
