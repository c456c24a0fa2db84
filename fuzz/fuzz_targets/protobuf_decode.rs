//! Fuzzes the protobuf request-body decoder: any input must give JSON or an error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut body = apimachinery::protobuf::MAGIC.to_vec();
    body.extend_from_slice(data);
    let _ = apimachinery::protobuf::decode(&body);
    let _ = apimachinery::protobuf::decode(data);
});
