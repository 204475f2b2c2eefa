//! The built-in guest module of `framemap bench`: a 16 MiB memory whose first
//! 8 MiB are a dense data image, two exports that dirty `k` pages of it
//! (scattered across the image, or as one contiguous run), and a compute loop
//! over it.

use wasm_encoder::{ConstExpr, DataSection, Encode as _, Section as _};

/// Size of the data image, in bytes: 8 MiB of non-zero bytes at offset 0.
pub const IMAGE_BYTES: u32 = 8 << 20;
/// The memory's minimum size, in wasm pages (16 MiB).
pub const MIN_PAGES: u32 = 256;
/// The memory's maximum size, in wasm pages (32 MiB).
pub const MAX_PAGES: u32 = 512;
/// The memory's maximum size, in bytes.
pub const MAX_MEMORY_BYTES: u64 = (MAX_PAGES as u64) << 16;
/// Passes [`COMPUTE_EXPORT`] makes over the image: 12 × 8 MiB = 96 MiB of
/// loads (about 5 ms).
pub const COMPUTE_PASSES: u32 = 12;
/// The export that dirties `k` pages scattered across the image:
/// `touch(k: i32)` (see [`Touch::Scattered`]).
pub const TOUCH_EXPORT: &str = "touch";
/// The export that dirties `k` contiguous pages: `touch_run(k: i32)` (see
/// [`Touch::Contiguous`]).
pub const TOUCH_RUN_EXPORT: &str = "touch_run";
/// The compute export: `run() -> i64`, the wrapping sum of the image's
/// little-endian `i64` words, [`COMPUTE_PASSES`] times over.
pub const COMPUTE_EXPORT: &str = "run";
/// The exported memory.
pub const MEMORY_EXPORT: &str = "memory";
/// The value `touch` writes to each page it dirties (image bytes are never 0).
pub const TOUCH_VALUE: u8 = 0;

/// The module's code; the data section is appended by [`wasm`].
const CODE_WAT: &str = r#"
(module
  (memory (export "memory") 256 512)

  ;; Writes one byte (0) into each of k distinct pages of the 8 MiB image:
  ;; 64 KiB apart while k <= 128, closer (8 MiB / k, rounded down to 4 KiB)
  ;; beyond, so every page stays inside the image.
  (func (export "touch") (param $k i32)
    (local $i i32) (local $stride i32)
    (local.set $stride
      (i32.and
        (i32.div_u (i32.const 8388608)
          (select (local.get $k) (i32.const 128) (i32.gt_u (local.get $k) (i32.const 128))))
        (i32.const -4096)))
    (if (i32.lt_u (local.get $stride) (i32.const 4096)) (then (local.set $stride (i32.const 4096))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $k)))
        (i32.store8
          (i32.rem_u (i32.mul (local.get $i) (local.get $stride)) (i32.const 8388608))
          (i32.const 0))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

  ;; Writes one byte (0) into each of the image's first k 4 KiB pages: one
  ;; contiguous dirty run (wrapping inside the image beyond k = 2048).
  (func (export "touch_run") (param $k i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $k)))
        (i32.store8
          (i32.rem_u (i32.mul (local.get $i) (i32.const 4096)) (i32.const 8388608))
          (i32.const 0))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

  ;; Sums the image's i64 words, 12 passes: 96 MiB of loads.
  (func (export "run") (result i64)
    (local $pass i32) (local $i i32) (local $acc i64)
    (loop $passes
      (local.set $i (i32.const 0))
      (loop $words
        (local.set $acc (i64.add (local.get $acc) (i64.load (local.get $i))))
        (local.set $acc (i64.add (local.get $acc) (i64.load offset=8 (local.get $i))))
        (local.set $acc (i64.add (local.get $acc) (i64.load offset=16 (local.get $i))))
        (local.set $acc (i64.add (local.get $acc) (i64.load offset=24 (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 32)))
        (br_if $words (i32.lt_u (local.get $i) (i32.const 8388608))))
      (local.set $pass (i32.add (local.get $pass) (i32.const 1)))
      (br_if $passes (i32.lt_u (local.get $pass) (i32.const 12))))
    (local.get $acc)))
"#;

/// The 8 MiB image: pseudo-random bytes (an xorshift stream), none of them
/// zero, so every page of it is dense and distinct.
pub fn image() -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..IMAGE_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            match (state >> 24) as u8 {
                0 => 0x5a,
                byte => byte,
            }
        })
        .collect()
}

/// The built-in module, as a binary: [`CODE_WAT`] plus one active data
/// segment putting [`image`] at offset 0.
pub fn wasm() -> Vec<u8> {
    let mut bytes = wat::parse_str(CODE_WAT).expect("the built-in module's text is valid");
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(0), image());
    // The data section (id 11) may follow the code section, the last one the
    // text produced: append it as wasm_encoder::Module::section would.
    bytes.push(data.id());
    data.encode(&mut bytes);
    bytes
}

/// Where an instance puts the `k` pages it dirties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Touch {
    /// [`TOUCH_EXPORT`]: spread across the image, 64 KiB apart up to
    /// k = 128 and 8 MiB / k apart beyond (k separate dirty regions).
    Scattered,
    /// [`TOUCH_RUN_EXPORT`]: the image's first k 4 KiB pages (one dirty
    /// region).
    Contiguous,
}

impl Touch {
    /// The export that dirties the pages this way.
    pub fn export(self) -> &'static str {
        match self {
            Touch::Scattered => TOUCH_EXPORT,
            Touch::Contiguous => TOUCH_RUN_EXPORT,
        }
    }

    /// The address of the `i`-th page of `k` the export dirties (as the guest
    /// computes it).
    pub fn address(self, i: u32, k: u32) -> u32 {
        match self {
            Touch::Scattered => touched_address(i, k),
            Touch::Contiguous => i.wrapping_mul(4096) % IMAGE_BYTES,
        }
    }
}

/// The address of the `i`-th page `touch(k)` dirties (as the guest computes it).
pub fn touched_address(i: u32, k: u32) -> u32 {
    let stride = ((IMAGE_BYTES / k.max(128)) & !4095).max(4096);
    i.wrapping_mul(stride) % IMAGE_BYTES
}

/// What `run` returns on an untouched instance.
pub fn expected_compute(image: &[u8]) -> i64 {
    let once = image
        .chunks_exact(8)
        .map(|w| i64::from_le_bytes(w.try_into().expect("8-byte chunk")))
        .fold(0i64, i64::wrapping_add);
    once.wrapping_mul(i64::from(COMPUTE_PASSES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_is_dense_and_module_validates() {
        let image = image();
        assert_eq!(image.len(), IMAGE_BYTES as usize);
        assert!(image.iter().all(|&b| b != 0));
        let wasm = wasm();
        wasmparser::Validator::new().validate_all(&wasm).expect("valid module");
    }

    #[test]
    fn touched_pages_are_distinct_and_inside_the_image() {
        for touch in [Touch::Scattered, Touch::Contiguous] {
            for k in [0u32, 1, 16, 128, 256, 2048] {
                let mut pages: Vec<u32> = (0..k).map(|i| touch.address(i, k) / 4096).collect();
                assert!(pages.iter().all(|&p| p < IMAGE_BYTES / 4096), "{touch:?} k={k}");
                pages.sort_unstable();
                pages.dedup();
                assert_eq!(pages.len(), k as usize, "{touch:?} k={k}");
            }
        }
        assert_eq!(touched_address(1, 16), 65536);
        assert_eq!(touched_address(1, 256), 32768);
    }

    #[test]
    fn scattered_pages_are_separate_regions_and_a_run_is_one() {
        // Dirty regions as a page scan would report them: maximal runs of
        // adjacent 4 KiB pages.
        let regions = |touch: Touch, k: u32| {
            let mut pages: Vec<u32> = (0..k).map(|i| touch.address(i, k) / 4096).collect();
            pages.sort_unstable();
            pages.windows(2).filter(|w| w[1] != w[0] + 1).count() + usize::from(k > 0)
        };
        assert_eq!(regions(Touch::Scattered, 256), 256);
        assert_eq!(regions(Touch::Contiguous, 256), 1);
        assert_eq!(regions(Touch::Contiguous, 16), 1);
        assert_eq!(Touch::Contiguous.address(255, 256), 255 * 4096);
    }
}
