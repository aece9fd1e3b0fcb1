//! Links a system CBLAS for the optional `blas` feature; without it (the default build) this does nothing.
//!
//! The library is found through pkg-config: `ODELT_BLAS` names the pkg-config package (for example `openblas`,
//! `blis`, `cblas`), else the first of `openblas`, `blis`, `cblas` that is installed is taken (Debian:
//! `apt-get install libopenblas-dev` or `libblis-dev`). A `blas` build with none of them fails here, naming them.

fn main() {
    println!("cargo:rerun-if-env-changed=ODELT_BLAS");
    #[cfg(feature = "blas")]
    blas::link();
}

#[cfg(feature = "blas")]
mod blas {
    const CANDIDATES: [&str; 3] = ["openblas", "blis", "cblas"];

    pub fn link() {
        let wanted = std::env::var("ODELT_BLAS").ok().filter(|s| !s.is_empty());
        let names: Vec<&str> = match &wanted {
            Some(name) => vec![name.as_str()],
            None => CANDIDATES.to_vec(),
        };
        let mut errors = Vec::new();
        for name in names {
            match pkg_config::Config::new().probe(name) {
                Ok(lib) => {
                    println!("cargo:rustc-env=ODELT_BLAS_LIB={name} {}", lib.version);
                    return;
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        panic!(
            "the `blas` feature needs a CBLAS library found by pkg-config ({}); on Debian `apt-get install \
             libopenblas-dev pkg-config`, or set ODELT_BLAS to the pkg-config name of another. Tried:\n{}",
            CANDIDATES.join(", "),
            errors.join("\n")
        );
    }
}
