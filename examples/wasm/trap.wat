;; trap.wat: a WASI preview1 command that traps.
;;
;; Prints one line to stdout, then divides by a zero it loads from memory
;; (so nothing can fold the division away): `integer divide by zero` in the
;; function named `divide`.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; Bytes 0..16 hold the iovec and nwritten; byte 32 the zero divisor.
  (data (i32.const 64) "trap: about to divide by zero\n") ;; 30 bytes

  (func $divide (param $a i32) (param $b i32) (result i32)
    (i32.div_u (local.get $a) (local.get $b)))

  (func $_start (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 30))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (call $divide (i32.const 1) (i32.load (i32.const 32)))))
)
