#pragma once
// KCLIP_TARGET_CLONES("avx512f", "avx2", "default"): GCC's target_clones, one copy of a function per instruction
// set, picked when the library loads by an ifunc resolver. ThreadSanitizer builds (make test-tsan) get the single
// default copy: the resolvers run during relocation, before the TSan runtime is up, and crash in its hooks.
#if defined(__SANITIZE_THREAD__)
#define KCLIP_TARGET_CLONES(...)
#else
#define KCLIP_TARGET_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#endif
