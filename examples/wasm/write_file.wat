;; write_file.wat: a WASI preview1 command that writes a file through its
;; first preopened directory (fd 3), e.g.
;;
;;   framemap run --dir /tmp/out::out examples/wasm/write_file.wat
;;
;; creates (or truncates) `hello.txt` in the preopen with the contents
;; "written by a framemap guest\n". Exits 0 on success; on failure exits with
;; the WASI errno of the call that failed (e.g. 8 = EBADF without a preopen).
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close"
    (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  ;; 0 iovec, 8 nwritten, 16 opened fd.
  (data (i32.const 64) "hello.txt")                     ;; 9 bytes
  (data (i32.const 128) "written by a framemap guest\n") ;; 28 bytes

  ;; Exits with `errno` if it is non-zero.
  (func $check (param $errno i32)
    (if (local.get $errno) (then (call $proc_exit (local.get $errno)))))

  (func $_start (export "_start")
    (local $fd i32)
    ;; path_open(dirfd 3, no lookup flags, "hello.txt", O_CREAT|O_TRUNC,
    ;;           rights FD_WRITE, no inherited rights, no fd flags, &fd)
    (call $check
      (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 9)
        (i32.const 9) (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 16)))
    (local.set $fd (i32.load (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 128))
    (i32.store (i32.const 4) (i32.const 28))
    (call $check (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $check (call $fd_close (local.get $fd))))
)
