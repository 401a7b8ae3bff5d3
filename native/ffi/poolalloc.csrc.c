/* SPDX-License-Identifier: MIT */
/* --- poolalloc.csrc.c: the set_source prelude of poolalloc._native -------------------------- */
#include "poolalloc.h"
