;; exit.wat: a WASI preview1 command that exits via proc_exit.
;;
;; The status is 7, unless the environment has EXIT_CODE=<digits>, in which
;; case it is that number (a value outside WASI's [0, 126) makes proc_exit
;; fail in the host). A malformed EXIT_CODE exits with 125. Prints nothing.
;;
;; Memory layout: 0 environ count, 4 environ buffer size, 64 "EXIT_CODE=",
;; 1024 environ pointer array (at most 256 entries), 4096 environ strings
;; (at most 61440 bytes).
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  (data (i32.const 64) "EXIT_CODE=") ;; 10 bytes

  ;; Whether the string at `s` starts with the 10-byte "EXIT_CODE=".
  (func $is_exit_code (param $s i32) (result i32)
    (local $k i32)
    (block $mismatch
      (loop $next
        (br_if $mismatch
          (i32.ne (i32.load8_u (i32.add (local.get $s) (local.get $k)))
                  (i32.load8_u (i32.add (i32.const 64) (local.get $k)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $k) (i32.const 10)))
        (return (i32.const 1))))
    (i32.const 0))

  ;; Parses the NUL-terminated decimal at `ptr` (at most 9 digits); 125 if
  ;; it is empty or not all digits.
  (func $parse (param $ptr i32) (result i32)
    (local $acc i32) (local $c i32) (local $digits i32)
    (block $end
      (loop $next
        (local.set $c (i32.load8_u (local.get $ptr)))
        (br_if $end (i32.eqz (local.get $c)))
        (if (i32.gt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 9))
          (then (return (i32.const 125))))
        (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
        (if (i32.gt_u (local.get $digits) (i32.const 9))
          (then (return (i32.const 125))))
        (local.set $acc
          (i32.add (i32.mul (local.get $acc) (i32.const 10))
                   (i32.sub (local.get $c) (i32.const 48))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $next)))
    (if (i32.eqz (local.get $digits)) (then (return (i32.const 125))))
    (local.get $acc))

  (func $_start (export "_start")
    (local $code i32) (local $count i32) (local $k i32) (local $s i32)
    (local.set $code (i32.const 7))
    (block $done
      (br_if $done (call $environ_sizes_get (i32.const 0) (i32.const 4)))
      (local.set $count (i32.load (i32.const 0)))
      (br_if $done (i32.gt_u (local.get $count) (i32.const 256)))
      (br_if $done (i32.gt_u (i32.load (i32.const 4)) (i32.const 61440)))
      (br_if $done (call $environ_get (i32.const 1024) (i32.const 4096)))
      (loop $next
        (br_if $done (i32.ge_u (local.get $k) (local.get $count)))
        (local.set $s
          (i32.load (i32.add (i32.const 1024) (i32.shl (local.get $k) (i32.const 2)))))
        (if (call $is_exit_code (local.get $s))
          (then
            (local.set $code (call $parse (i32.add (local.get $s) (i32.const 10))))
            (br $done)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $next)))
    (call $proc_exit (local.get $code)))
)
