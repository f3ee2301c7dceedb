/* dirwatch.h — be told when files appear, change or disappear in one directory (inotify). */
#ifndef RK_DIRWATCH_H
#define RK_DIRWATCH_H
#include "rk.h"

enum rk_dirwatch_kind { RK_DW_WRITTEN = 1, RK_DW_REMOVED = 2, RK_DW_OVERFLOW = 3, RK_DW_GONE = 4 };
typedef void (*rk_dirwatch_cb)(void *ud, int kind, const char *name);

/* Returns a non-blocking inotify fd watching dir, or -1. Written = closed after writing or moved in;
 * removed = deleted or moved out; overflow = events were lost (rescan); gone = dir itself removed. */
int rk_dirwatch_open(const char *dir, rk_err *e);
/* Drain what is readable on fd, calling cb per event. Returns 0, or -1 on a read error. */
int rk_dirwatch_read(int fd, rk_dirwatch_cb cb, void *ud, rk_err *e);
#endif
