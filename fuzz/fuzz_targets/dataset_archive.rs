//! One uploaded file, as the registry receives it: recognised by its bytes (tar, tar.gz, zip),
//! extracted safely under the limits, then decoded whole.
#![no_main]

use commentary_fuzz::decode_everything;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(root) = tempfile::tempdir() else {
        return;
    };
    let upload = root.path().join("upload");
    let staging = root.path().join("staging");
    if std::fs::write(&upload, data).is_err() || std::fs::create_dir(&staging).is_err() {
        return;
    }
    decode_everything(&upload, &staging);
    // Extraction cleans up after itself, whatever the outcome.
    let left = std::fs::read_dir(&staging).map_or(0, |entries| entries.count());
    assert_eq!(left, 0, "extraction left {left} entries in staging");
});
