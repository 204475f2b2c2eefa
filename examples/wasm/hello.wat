;; hello.wat: framemap's "main job" guest, a WASI preview1 command.
;;
;; Runs a sieve of Eratosthenes over LIMIT bytes of freshly grown linear
;; memory (one byte per number, so LIMIT=1000000 touches ~1 MiB and
;; LIMIT=20000000 ~20 MiB) and prints the number of primes it found:
;;
;;   hello from framemap: sieve found 78498 primes below 1000000
;;
;; Usage: hello [LIMIT]   (LIMIT: decimal integer in [2, 2000000000],
;; default 1000000). Exit status 0 on success, 2 on a bad argument, 3 if
;; memory.grow fails. All numbers in the output are computed and formatted
;; by this module.
;;
;; Memory layout of page 0 (the sieve lives in pages grown at run time):
;;      0  iovec {ptr, len} for fd_write
;;      8  nwritten (fd_write result)
;;     16  argc                 20  argv buffer size
;;     64  message texts (data segments below)
;;    512  output line buffer (< 512 bytes)
;;   1024  argv pointer array (at most 256 arguments)
;;   2048  argv string buffer (at most 63488 bytes)
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  (data (i32.const 64) "hello from framemap: sieve found ")   ;; 33 bytes
  (data (i32.const 128) " primes below ")                     ;; 14 bytes
  (data (i32.const 160)
    "hello: usage: hello [LIMIT]  (LIMIT: decimal integer in [2, 2000000000], default 1000000)\n") ;; 90 bytes
  (data (i32.const 256) "hello: memory.grow failed: no room for the sieve\n") ;; 49 bytes

  ;; Writes `len` bytes at `ptr` to file descriptor `fd`; returns the errno.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))

  ;; Prints the usage message to stderr and exits with status 2.
  (func $usage
    (drop (call $write (i32.const 2) (i32.const 160) (i32.const 90)))
    (call $proc_exit (i32.const 2))
    unreachable)

  ;; Copies `len` bytes from `src` to `dst`; returns `dst + len`.
  (func $append (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  ;; Writes the decimal digits of the unsigned `value` at `dst`; returns the
  ;; address just past the last digit.
  (func $format_u32 (param $dst i32) (param $value i32) (result i32)
    (local $len i32) (local $rest i32) (local $p i32)
    ;; Count the digits.
    (local.set $len (i32.const 1))
    (local.set $rest (local.get $value))
    (block $counted
      (loop $count
        (br_if $counted (i32.lt_u (local.get $rest) (i32.const 10)))
        (local.set $rest (i32.div_u (local.get $rest) (i32.const 10)))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $count)))
    ;; Emit them from the least significant end backwards.
    (local.set $p (i32.add (local.get $dst) (local.get $len)))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
      (local.set $value (i32.div_u (local.get $value) (i32.const 10)))
      (br_if $digit (local.get $value)))
    (i32.add (local.get $dst) (local.get $len)))

  ;; Parses the NUL-terminated decimal string at `ptr`. Returns the value, or
  ;; -1 if the string is empty, has a non-digit, or exceeds 2000000000.
  (func $parse_limit (param $ptr i32) (result i64)
    (local $acc i64) (local $c i32) (local $digits i32)
    (block $end
      (loop $next
        (local.set $c (i32.load8_u (local.get $ptr)))
        (br_if $end (i32.eqz (local.get $c)))
        (if (i32.gt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 9))
          (then (return (i64.const -1))))
        (local.set $acc
          (i64.add (i64.mul (local.get $acc) (i64.const 10))
                   (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
        (if (i64.gt_u (local.get $acc) (i64.const 2000000000))
          (then (return (i64.const -1))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
        (br $next)))
    (if (i32.eqz (local.get $digits)) (then (return (i64.const -1))))
    (local.get $acc))

  ;; Sieve of Eratosthenes over the zeroed bytes [base, base + n): byte i
  ;; becomes 1 when i is found composite. Returns the number of primes < n.
  (func $sieve (param $base i32) (param $n i32) (result i32)
    (local $i i32) (local $j i32) (local $count i32)
    ;; Cross off multiples of every prime i with i*i < n (n <= 2e9, so
    ;; i <= 44722 and neither i*i nor j + i can overflow u32).
    (local.set $i (i32.const 2))
    (block $sieved
      (loop $outer
        (br_if $sieved
          (i32.ge_u (i32.mul (local.get $i) (local.get $i)) (local.get $n)))
        (if (i32.eqz (i32.load8_u (i32.add (local.get $base) (local.get $i))))
          (then
            (local.set $j (i32.mul (local.get $i) (local.get $i)))
            (block $crossed
              (loop $inner
                (br_if $crossed (i32.ge_u (local.get $j) (local.get $n)))
                (i32.store8 (i32.add (local.get $base) (local.get $j)) (i32.const 1))
                (local.set $j (i32.add (local.get $j) (local.get $i)))
                (br $inner)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    ;; Count the survivors in [2, n).
    (local.set $i (i32.const 2))
    (block $counted
      (loop $count
        (br_if $counted (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $count
          (i32.add (local.get $count)
                   (i32.eqz (i32.load8_u (i32.add (local.get $base) (local.get $i))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $count)))
    (local.get $count))

  (func $_start (export "_start")
    (local $argc i32) (local $limit i32) (local $parsed i64)
    (local $base i32) (local $count i32) (local $p i32)
    (local.set $limit (i32.const 1000000))

    ;; Optional argument: the sieve limit.
    (if (call $args_sizes_get (i32.const 16) (i32.const 20)) (then (call $usage)))
    (local.set $argc (i32.load (i32.const 16)))
    (if (i32.gt_u (local.get $argc) (i32.const 2)) (then (call $usage)))
    (if (i32.gt_u (i32.load (i32.const 20)) (i32.const 63488)) (then (call $usage)))
    (if (i32.eq (local.get $argc) (i32.const 2))
      (then
        (if (call $args_get (i32.const 1024) (i32.const 2048)) (then (call $usage)))
        (local.set $parsed (call $parse_limit (i32.load (i32.const 1028))))
        (if (i64.lt_s (local.get $parsed) (i64.const 2)) (then (call $usage)))
        (local.set $limit (i32.wrap_i64 (local.get $parsed)))))

    ;; Grow fresh (zeroed) memory for one byte per number below the limit.
    (local.set $base
      (memory.grow
        (i32.shr_u (i32.add (local.get $limit) (i32.const 65535)) (i32.const 16))))
    (if (i32.eq (local.get $base) (i32.const -1))
      (then
        (drop (call $write (i32.const 2) (i32.const 256) (i32.const 49)))
        (call $proc_exit (i32.const 3))
        unreachable))
    (local.set $base (i32.shl (local.get $base) (i32.const 16)))

    (local.set $count (call $sieve (local.get $base) (local.get $limit)))

    ;; "hello from framemap: sieve found <count> primes below <limit>\n"
    (local.set $p (call $append (i32.const 512) (i32.const 64) (i32.const 33)))
    (local.set $p (call $format_u32 (local.get $p) (local.get $count)))
    (local.set $p (call $append (local.get $p) (i32.const 128) (i32.const 14)))
    (local.set $p (call $format_u32 (local.get $p) (local.get $limit)))
    (i32.store8 (local.get $p) (i32.const 10))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (if (call $write (i32.const 1) (i32.const 512) (i32.sub (local.get $p) (i32.const 512)))
      (then (call $proc_exit (i32.const 1)))))
)
