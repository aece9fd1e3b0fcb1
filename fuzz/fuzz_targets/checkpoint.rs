//! The checkpoint loaders on arbitrary bytes: the official pickle loader (both weight slots) and the safetensors
//! loader (through a scratch file, since it opens paths). Ok or Err, never a panic.
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use odelt_nodes::checkpoint::official::{describe, load_official_pkl};
use odelt_nodes::checkpoint::{SafetensorsCheckpoint, WeightsSlot};

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("odelt-fuzz-{}.safetensors", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    for slot in [WeightsSlot::Params, WeightsSlot::ParamsEma] {
        match load_official_pkl(data, slot) {
            Ok(p) => {
                let _ = describe(&p);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }

    // Safetensors: only inputs that look like one (8-byte header length, then '{') are worth the file write.
    if data.len() >= 9 && data[8] == b'{' {
        let path = scratch();
        if let Ok(mut f) = std::fs::File::create(path) {
            if f.write_all(data).is_ok() {
                drop(f);
                if let Ok(st) = SafetensorsCheckpoint::open(path) {
                    let _ = st.config();
                    let names: Vec<String> = st.names().map(str::to_string).collect();
                    for n in names.iter().take(16) {
                        let _ = st.shape(n);
                        let _ = st.read(n);
                    }
                }
            }
        }
    }
});
