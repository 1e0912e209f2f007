// Package cpredicate exposes to Go tests the injector's C predicate for
// UCX libraries, ucxf_is_ucx_object, compiled from the injector's own
// header (preload/ucx_object.h), so that a table test can hold it and
// proc.IsUCXLibrary to the same answers. Only tests import it.
package cpredicate

/*
#cgo CFLAGS: -I${SRCDIR}/../../../preload
#include <stdlib.h>
#include "ucx_object.h"

static int ucxf_test_is_ucx_object(const char *path, int *libucp)
{
    return ucxf_is_ucx_object(path, libucp);
}
*/
import "C"

import "unsafe"

// IsUCXObject calls the injector's ucxf_is_ucx_object on path: whether it
// names one of UCX's core libraries, and whether that is a libucp.
func IsUCXObject(path string) (ucx, libucp bool) {
	cs := C.CString(path)
	defer C.free(unsafe.Pointer(cs))
	var lp C.int
	r := C.ucxf_test_is_ucx_object(cs, &lp)
	return r != 0, lp != 0
}
