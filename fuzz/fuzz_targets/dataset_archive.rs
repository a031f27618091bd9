//! One uploaded file, as the registry receives it: recognised by its bytes (tar, tar.gz, zip),
//! indexed under the limits and decoded whole in place.
#![no_main]

use commentary_fuzz::decode_everything;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(root) = tempfile::tempdir() else {
        return;
    };
    let upload = root.path().join("upload");
    if std::fs::write(&upload, data).is_err() {
        return;
    }
    decode_everything(&upload);
    // An archive is read where it lies: nothing is written beside it.
    let written = std::fs::read_dir(root.path()).map_or(0, |entries| entries.count());
    assert_eq!(written, 1, "decoding wrote {} files", written - 1);
});
