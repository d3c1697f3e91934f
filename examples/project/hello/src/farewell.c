#include "hello.h"

/* To make the build fail on purpose (late: this file is compiled last),
   uncomment the next line. */
/* #define BREAK_THE_BUILD */

#ifdef BREAK_THE_BUILD
#error "farewell.c is broken on purpose: comment out BREAK_THE_BUILD"
#endif

const char *farewell(void)
{
    return "Goodbye from a ws workspace";
}
