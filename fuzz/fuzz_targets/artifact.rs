//! A commentary artifact as `POST /v1/commentaries` receives it: three parts (manifest.json,
//! tensors.safetensors, report.json; an empty report part means none), checked by
//! `verify_artifact_bytes` (which also checks the insight tensors' shapes: crafted ones once
//! panicked the pages). The tensor decoder runs on its own as well.
#![no_main]

use std::path::Path;

use commentary_fuzz::parts;
use libfuzzer_sys::fuzz_target;
use schema::artifact::{decode_metadata, decode_tensors, verify_artifact_bytes};

fuzz_target!(|data: &[u8]| {
    let parts = parts(data);
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    let (manifest, tensors, report) = (part(0), part(1), part(2));
    // The tensor decoder alone, on every input.
    let _ = decode_metadata(tensors);
    let decoded = decode_tensors(tensors);
    let report = (!report.is_empty()).then_some(report);
    if let Ok(verified) = verify_artifact_bytes(Path::new("upload"), manifest, tensors, report) {
        let again = decoded.expect("a verified artifact's tensors decode");
        assert_eq!(again.len(), verified.tensors.len());
    }
});
