;; The `framemap run --invoke` test component (tests/invoke_component.rs),
;; written in component-model text: the tests parse it with the `wat` crate,
;; so there is no built .wasm to keep in step. In WIT terms it exports
;;
;;   record point { x: s32, y: s32 }
;;   variant sign { negative(u32), zero, positive(u32) }
;;   add: func(a: u32, b: u32) -> u32
;;   neg: func(x: s64) -> s64
;;   half: func(x: f64) -> f64
;;   third: func(x: f32) -> f32
;;   greet: func(name: string) -> string       "hello, " ++ name
;;   motto: func() -> string                   a data segment, read in place
;;   primes: func() -> list<u8>                a data segment, read in place
;;   sum: func(xs: list<u32>) -> u32
;;   swap: func(p: point) -> point
;;   classify: func(n: s32) -> sign
;;   checked-div: func(a: u32, b: u32) -> result<u32, string>
;;   nothing: func()
;;   boom: func()                               traps (unreachable)
;;   interface example:guest/api { double: func(x: u32) -> u32, ping: func() -> u32 }
;;   interface example:guest/other { ping: func() -> u32 }
;;   interface wasi:cli/run@0.2.0 { run: func() -> result }   traps: never called by --invoke
;;
;; `motto` and `primes` return pointers into the data segments, so their
;; results are the prepared component's copy-on-write images.
(component
  (core module $m
    (memory (export "memory") 1)
    ;; Bump allocator for the canonical ABI (strings and lists passed in,
    ;; `greet`'s result). Results of more than one flat value are written at
    ;; 1024 (the return area), the heap starts at 4096.
    (global $heap (mut i32) (i32.const 4096))
    (data (i32.const 0) "hello, ")
    (data (i32.const 16) "framemap maps frames")
    (data (i32.const 48) "division by zero")
    (data (i32.const 64) "\02\03\05\07\0b\0d")
    (func $realloc (export "realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $new_size i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                 (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $p) (local.get $new_size)))
      (if (local.get $old)
        (then
          (memory.copy (local.get $p) (local.get $old)
            (select (local.get $old_size) (local.get $new_size)
              (i32.lt_u (local.get $old_size) (local.get $new_size))))))
      (local.get $p))
    (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
    (func (export "neg") (param i64) (result i64) (i64.sub (i64.const 0) (local.get 0)))
    (func (export "half") (param f64) (result f64) (f64.mul (local.get 0) (f64.const 0.5)))
    (func (export "third") (param f32) (result f32) (f32.div (local.get 0) (f32.const 3)))
    (func (export "greet") (param $ptr i32) (param $len i32) (result i32)
      (local $out i32)
      (local.set $out
        (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.add (local.get $len) (i32.const 7))))
      (memory.copy (local.get $out) (i32.const 0) (i32.const 7))
      (memory.copy (i32.add (local.get $out) (i32.const 7)) (local.get $ptr) (local.get $len))
      (i32.store (i32.const 1024) (local.get $out))
      (i32.store (i32.const 1028) (i32.add (local.get $len) (i32.const 7)))
      (i32.const 1024))
    (func (export "motto") (result i32)
      (i32.store (i32.const 1024) (i32.const 16))
      (i32.store (i32.const 1028) (i32.const 20))
      (i32.const 1024))
    (func (export "primes") (result i32)
      (i32.store (i32.const 1024) (i32.const 64))
      (i32.store (i32.const 1028) (i32.const 6))
      (i32.const 1024))
    (func (export "sum") (param $ptr i32) (param $len i32) (result i32)
      (local $acc i32)
      (block $done
        (loop $next
          (br_if $done (i32.eqz (local.get $len)))
          (local.set $acc (i32.add (local.get $acc) (i32.load (local.get $ptr))))
          (local.set $ptr (i32.add (local.get $ptr) (i32.const 4)))
          (local.set $len (i32.sub (local.get $len) (i32.const 1)))
          (br $next)))
      (local.get $acc))
    (func (export "swap") (param $x i32) (param $y i32) (result i32)
      (i32.store (i32.const 1024) (local.get $y))
      (i32.store (i32.const 1028) (local.get $x))
      (i32.const 1024))
    ;; sign: discriminant (u8) at 1024, payload (u32) at 1028.
    (func (export "sign") (param $n i32) (result i32)
      (if (i32.lt_s (local.get $n) (i32.const 0))
        (then
          (i32.store8 (i32.const 1024) (i32.const 0))
          (i32.store (i32.const 1028) (i32.sub (i32.const 0) (local.get $n))))
        (else
          (if (i32.eqz (local.get $n))
            (then (i32.store8 (i32.const 1024) (i32.const 1)))
            (else
              (i32.store8 (i32.const 1024) (i32.const 2))
              (i32.store (i32.const 1028) (local.get $n))))))
      (i32.const 1024))
    ;; result<u32, string>: discriminant (u8) at 1024, payload at 1028.
    (func (export "checked-div") (param $a i32) (param $b i32) (result i32)
      (if (i32.eqz (local.get $b))
        (then
          (i32.store8 (i32.const 1024) (i32.const 1))
          (i32.store (i32.const 1028) (i32.const 48))
          (i32.store (i32.const 1032) (i32.const 16)))
        (else
          (i32.store8 (i32.const 1024) (i32.const 0))
          (i32.store (i32.const 1028) (i32.div_u (local.get $a) (local.get $b)))))
      (i32.const 1024))
    (func (export "nothing"))
    (func (export "boom") unreachable)
    (func (export "double") (param i32) (result i32) (i32.shl (local.get 0) (i32.const 1)))
    (func (export "ping-api") (result i32) (i32.const 1))
    (func (export "ping-other") (result i32) (i32.const 2))
    (func (export "run") (result i32) unreachable))
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))

  (type $point (record (field "x" s32) (field "y" s32)))
  (export $point-t "point" (type $point))
  (type $sign (variant (case "negative" u32) (case "zero") (case "positive" u32)))
  (export $sign-t "sign" (type $sign))

  (func (export "add") (param "a" u32) (param "b" u32) (result u32) (canon lift (core func $i "add")))
  (func (export "neg") (param "x" s64) (result s64) (canon lift (core func $i "neg")))
  (func (export "half") (param "x" f64) (result f64) (canon lift (core func $i "half")))
  (func (export "third") (param "x" f32) (result f32) (canon lift (core func $i "third")))
  (func (export "greet") (param "name" string) (result string)
    (canon lift (core func $i "greet") (memory $mem) (realloc (func $i "realloc"))))
  (func (export "motto") (result string) (canon lift (core func $i "motto") (memory $mem)))
  (func (export "primes") (result (list u8)) (canon lift (core func $i "primes") (memory $mem)))
  (func (export "sum") (param "xs" (list u32)) (result u32)
    (canon lift (core func $i "sum") (memory $mem) (realloc (func $i "realloc"))))
  (func (export "swap") (param "p" $point-t) (result $point-t) (canon lift (core func $i "swap") (memory $mem)))
  (func (export "classify") (param "n" s32) (result $sign-t) (canon lift (core func $i "sign") (memory $mem)))
  (func (export "checked-div") (param "a" u32) (param "b" u32) (result (result u32 (error string)))
    (canon lift (core func $i "checked-div") (memory $mem)))
  (func (export "nothing") (canon lift (core func $i "nothing")))
  (func (export "boom") (canon lift (core func $i "boom")))

  (func $double (param "x" u32) (result u32) (canon lift (core func $i "double")))
  (func $ping-api (result u32) (canon lift (core func $i "ping-api")))
  (func $ping-other (result u32) (canon lift (core func $i "ping-other")))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $api (export "double" (func $double)) (export "ping" (func $ping-api)))
  (instance $other (export "ping" (func $ping-other)))
  (instance $cli-run (export "run" (func $run)))
  (export "example:guest/api" (instance $api))
  (export "example:guest/other" (instance $other))
  (export "wasi:cli/run@0.2.0" (instance $cli-run)))
