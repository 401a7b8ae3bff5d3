#include "pa_uring.h"
