// loopback.c is an LD_PRELOAD shim that keeps the local emulators on loopback.
//
// kinesis-mock and DynamoDB Local bind every interface and have no host option.
// This shim rewrites a bind() to the wildcard address into a bind to loopback
// (127.0.0.1, or ::ffff:127.0.0.1 on a dual-stack IPv6 socket), so no test
// server is ever reachable from outside the machine.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
	static bind_fn real;
	if (!real) real = (bind_fn)dlsym(RTLD_NEXT, "bind");
	if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		struct sockaddr_in a;
		memcpy(&a, addr, sizeof a);
		if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
			a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			return real(fd, (const struct sockaddr *)&a, sizeof a);
		}
	}
	if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 a;
		memcpy(&a, addr, sizeof a);
		if (memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr) == 0) {
			static const unsigned char mapped[16] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff,127,0,0,1};
			memcpy(&a.sin6_addr, mapped, sizeof mapped);
			return real(fd, (const struct sockaddr *)&a, sizeof a);
		}
	}
	return real(fd, addr, len);
}
