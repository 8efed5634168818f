# fuzz.mk: builds the libFuzzer targets of tests/fuzz/ (run.sh drives it). The parsers' parts (base, lua, gen,
# sched, io) are compiled with clang, coverage, ASan and UBSan; the generator and templates are embedded as in
# the main build (cmake/embed.cmake). Lua and jansson are the system's uninstrumented libraries.
#   make -f tests/fuzz/fuzz.mk ROOT=<repo> OUT=<build dir> <OUT>/fuzz_<target>
CC ?= clang
LUA_INC ?= /usr/include/lua5.4
LUA_LIB ?= /usr/lib/x86_64-linux-gnu/liblua5.4.a
PARTS := base lua gen sched io
SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
CFLAGS := -std=gnu11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -Wall -Wno-unused-parameter $(SAN) \
          -I$(ROOT)/runtime/include $(addprefix -I$(ROOT)/runtime/,$(PARTS)) -I$(ROOT)/tests/fuzz -I$(LUA_INC)
SRCS := $(foreach p,$(PARTS),$(wildcard $(ROOT)/runtime/$(p)/*.c))
OBJS := $(patsubst $(ROOT)/%.c,$(OUT)/obj/%.o,$(SRCS)) $(OUT)/obj/lg_embedded.o $(OUT)/obj/fuzz_util.o
EMBED := $(sort $(shell find $(ROOT)/generator -name '*.lua') \
                $(shell find $(ROOT)/templates -name '*.cuh' -o -name '*.h' -o -name '*.inst'))
LIBS := $(LUA_LIB) -ljansson -lm -ldl -lpthread

$(OUT)/obj/%.o: $(ROOT)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(OUT)/obj/fuzz_util.o: $(ROOT)/tests/fuzz/fuzz_util.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(OUT)/lg_embedded.c: $(EMBED) $(ROOT)/cmake/embed.cmake
	@mkdir -p $(OUT)
	cmake -DOUT=$@ -DROOT=$(ROOT) "-DFILES=$(subst $(eval) ,|,$(EMBED))" -P $(ROOT)/cmake/embed.cmake

$(OUT)/obj/lg_embedded.o: $(OUT)/lg_embedded.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(OUT)/libfuzzparts.a: $(OBJS)
	rm -f $@ && ar rcs $@ $^

$(OUT)/fuzz_%: $(ROOT)/tests/fuzz/fuzz_%.c $(OUT)/libfuzzparts.a
	$(CC) $(CFLAGS) -fsanitize=fuzzer -MMD -MP -MF $@.d $< $(OUT)/libfuzzparts.a $(LIBS) -o $@

-include $(OBJS:.o=.d) $(wildcard $(OUT)/fuzz_*.d)
