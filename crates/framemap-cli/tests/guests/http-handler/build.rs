//! Writes the 16 MiB image of the `image` feature: every byte non-zero,
//! every page different, compressible (so the built guest stays small in
//! git).

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("image.bin");
    let image: Vec<u8> = (0..16usize << 20).map(|i| ((i >> 12) as u8 ^ (i % 251) as u8) | 1).collect();
    std::fs::write(out, image).expect("write image");
}
