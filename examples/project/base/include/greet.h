/* The base's interface: what every greeting program says. */
#ifndef GREET_H
#define GREET_H

#define GREET_WHO "world"

#endif
