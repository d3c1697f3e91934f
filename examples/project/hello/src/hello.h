#ifndef HELLO_H
#define HELLO_H

const char *greeting(void);
const char *name(void);
const char *farewell(void);

#endif
