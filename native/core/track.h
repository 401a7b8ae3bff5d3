/* SPDX-License-Identifier: MIT */
/* --- track.h: tell AddressSanitizer which pool bytes are free ------------------------------
 *
 * With PA_TRACK_ASAN (set by PA_SANITIZE=1 builds) a block is poisoned while it is free (in a
 * slab or a thread cache) and unpoisoned while a user holds it, so a use after pa_free() inside
 * a live slab is reported by ASan. Otherwise every hook is a no-op (mimalloc track.h).
 * ------------------------------------------------------------------------------------------- */
#ifndef PA_TRACK_H
#define PA_TRACK_H

#include <stddef.h>

#if defined(PA_TRACK_ASAN) && PA_TRACK_ASAN
#include <sanitizer/asan_interface.h>
#define pa_track_poison(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define pa_track_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define pa_track_is_poisoned(p) (__asan_address_is_poisoned((p)) != 0)
#else
#define pa_track_poison(p, n) ((void)(p), (void)(n))
#define pa_track_unpoison(p, n) ((void)(p), (void)(n))
#define pa_track_is_poisoned(p) ((void)(p), 0)
#endif

#endif /* PA_TRACK_H */
