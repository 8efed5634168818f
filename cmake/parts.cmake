# parts.cmake: the library's parts and the arrows between them, as the build enforces them (docs/design.md
# explains each part).
#
# lg_part(NAME [DEPS part...] [EXT CUDA|LUA|JANSSON|TEMPLATES...] [PUBLIC header...] [FACE header...])
#   - sources: runtime/NAME/*.c, compiled as the OBJECT library lg_NAME with -fvisibility=hidden;
#   - PUBLIC: the headers in runtime/include/ this part owns (each public header has exactly one owner);
#   - FACE: this part's internal headers that the parts depending on it may include (everything else in
#     runtime/NAME/ is private to the part);
#   - include path: a per-part view (build/parts/NAME/include) holding only the PUBLIC headers of the part and
#     of its DEPS, and the FACE headers of its DEPS; the part's own folder; and the EXT directories.
# So including a header of a part one may not use, a private header of another part, CUDA in a part without
# CUDA, or Lua where Lua is not allowed fails to compile. Parts must be declared after their DEPS.

set(LG_PARTS "")
set(LG_EXT_HEADERS_CUDA cuda.h cuda_runtime.h cuda_runtime_api.h nvrtc.h cublasLt.h cublas_v2.h nccl.h cudnn.h)
set(LG_EXT_HEADERS_LUA lua.h lauxlib.h lualib.h luaconf.h)
set(LG_EXT_HEADERS_JANSSON jansson.h)
set(LG_ALL_PART_DIRS ${CMAKE_SOURCE_DIR}/runtime/include)

function(lg_part name)
  cmake_parse_arguments(P "" "" "DEPS;EXT;PUBLIC;FACE" ${ARGN})
  set(dir ${CMAKE_SOURCE_DIR}/runtime/${name})
  set(view ${CMAKE_BINARY_DIR}/parts/${name}/include)
  file(REMOVE_RECURSE ${view})
  file(MAKE_DIRECTORY ${view})
  set(visible ${P_PUBLIC})
  foreach(h ${P_PUBLIC})
    file(CREATE_LINK ${CMAKE_SOURCE_DIR}/runtime/include/${h} ${view}/${h} SYMBOLIC)
  endforeach()
  foreach(d ${P_DEPS})
    if(NOT d IN_LIST LG_PARTS)
      message(FATAL_ERROR "parts.cmake: part '${name}' depends on '${d}', which is not declared before it")
    endif()
    foreach(h ${LG_PUBLIC_${d}})
      file(CREATE_LINK ${CMAKE_SOURCE_DIR}/runtime/include/${h} ${view}/${h} SYMBOLIC)
    endforeach()
    foreach(h ${LG_FACE_${d}})
      file(CREATE_LINK ${CMAKE_SOURCE_DIR}/runtime/${d}/${h} ${view}/${h} SYMBOLIC)
    endforeach()
  endforeach()

  # Externals the part may not use get a header of the same name in its view that stops the compile with a
  # message: the view comes before the system directories, where Debian keeps jansson.h and some machines a
  # cuda.h (/usr/local/include).
  foreach(e CUDA LUA JANSSON)
    if(NOT e IN_LIST P_EXT)
      foreach(h ${LG_EXT_HEADERS_${e}})
        file(WRITE ${view}/${h} "#error \"part '${name}' may not use ${e} (cmake/parts.cmake, docs/design.md)\"\n")
      endforeach()
    endif()
  endforeach()

  set(inc ${view} ${dir})
  foreach(e ${P_EXT})
    if(e STREQUAL "CUDA")
      list(APPEND inc ${CUDAToolkit_INCLUDE_DIRS})
    elseif(e STREQUAL "LUA")
      list(APPEND inc ${LUA_INCLUDE_DIR})
    elseif(e STREQUAL "JANSSON")
      list(APPEND inc ${JANSSON_INCLUDE_DIR})
    elseif(e STREQUAL "TEMPLATES")
      list(APPEND inc ${CMAKE_SOURCE_DIR}/templates)
    else()
      message(FATAL_ERROR "parts.cmake: part '${name}': unknown EXT '${e}'")
    endif()
  endforeach()

  file(GLOB srcs CONFIGURE_DEPENDS ${dir}/*.c)
  add_library(lg_${name} OBJECT ${srcs})
  # -nostdinc would be too much; the system directories hold no CUDA, Lua or jansson headers on Debian (they
  # live in /usr/local/cuda, /usr/include/lua5.4 and /usr/include, the last checked by the layout test).
  target_include_directories(lg_${name} PRIVATE ${inc})
  target_compile_options(lg_${name} PRIVATE -fvisibility=hidden)
  file(GENERATE OUTPUT ${CMAKE_BINARY_DIR}/parts/${name}/include_dirs.txt CONTENT "${inc}")

  set(LG_PUBLIC_${name} ${P_PUBLIC} PARENT_SCOPE)
  set(LG_FACE_${name} ${P_FACE} PARENT_SCOPE)
  set(LG_EXT_${name} ${P_EXT} PARENT_SCOPE)
  set(LG_PARTS ${LG_PARTS} ${name} PARENT_SCOPE)
  set(LG_ALL_PART_DIRS ${LG_ALL_PART_DIRS} ${dir} PARENT_SCOPE)
endfunction()

# ---- the table (keep docs/design.md's table in step) ----
lg_part(base PUBLIC lg_common.h lg_file.h lg_half.h FACE lg_base.h)
lg_part(lua DEPS base EXT LUA FACE lg_lua.h)
lg_part(gen DEPS lua base EXT LUA PUBLIC lg_gen.h)
lg_part(gpu DEPS base EXT CUDA FACE lg_gpu.h cu_syms.h lg_cudnn.h)
lg_part(jit DEPS gpu base EXT CUDA PUBLIC lg_jit.h)
# tune: search spaces and pruning, the timing harness, the tuning database; below ops, which consults it
lg_part(tune DEPS gen gpu base EXT CUDA JANSSON PUBLIC lg_tune.h)
lg_part(ops DEPS tune gen jit gpu base EXT CUDA TEMPLATES PUBLIC lg_blas.h lg_ctx.h lg_lora.h lg_mlora.h lg_attention.h lg_decoder_ops.h)
# tuner: tunes the kernels a spec needs on the GPU (ops' layers), writing the winners into tune's database
lg_part(tuner DEPS ops tune gen jit gpu base EXT CUDA TEMPLATES PUBLIC lg_tuner.h)
lg_part(ref DEPS base EXT TEMPLATES PUBLIC lg_ref.h lg_ref_ops.h lg_ref_mlora.h)
lg_part(sched DEPS base PUBLIC lg_sched.h FACE lg_sched_build.h)
lg_part(io DEPS sched lua base EXT LUA JANSSON PUBLIC lg_io.h lg_hf.h lg_tokens.h lg_trainjob.h lg_ckpt.h)
# model sees gen and jit only because lg_ctx.h (ops) exposes their types
lg_part(model DEPS ops gen jit gpu io ref base EXT CUDA TEMPLATES FACE lg_backend.h lg_decoder.h)
# comm: TCP sockets and NCCL (loaded at run time, like the driver)
lg_part(comm DEPS gpu base EXT CUDA PUBLIC lg_comm.h)
lg_part(train DEPS model comm sched io base PUBLIC lg_train.h)

# Every public header has exactly one owner.
file(GLOB LG_PUBLIC_HEADERS RELATIVE ${CMAKE_SOURCE_DIR}/runtime/include ${CMAKE_SOURCE_DIR}/runtime/include/*.h)
foreach(h ${LG_PUBLIC_HEADERS})
  set(owners "")
  foreach(p ${LG_PARTS})
    if(h IN_LIST LG_PUBLIC_${p})
      list(APPEND owners ${p})
    endif()
  endforeach()
  list(LENGTH owners n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "parts.cmake: runtime/include/${h} must be owned by exactly one part (owners: ${owners})")
  endif()
endforeach()

# The layout tests: exported symbols, and forbidden includes that must fail to compile with the part's own
# include path (tests/layout/).
function(lg_layout_tests)
  set(cases ${CMAKE_SOURCE_DIR}/tests/layout/include_cases.txt)
  add_test(NAME test_layout_includes
           COMMAND ${CMAKE_COMMAND} -DCC=${CMAKE_C_COMPILER} -DPARTS_DIR=${CMAKE_BINARY_DIR}/parts
                   -DCASES=${cases} -DCLI_DIRS=${CMAKE_SOURCE_DIR}/runtime/include|${CMAKE_SOURCE_DIR}/cli|${CUDAToolkit_INCLUDE_DIRS}|${JANSSON_INCLUDE_DIR}
                   -DSRC=${CMAKE_SOURCE_DIR} -DWORK=${CMAKE_BINARY_DIR}/layout-scratch
                   -P ${CMAKE_SOURCE_DIR}/tests/layout/check_includes.cmake)
  add_test(NAME test_layout_exports
           COMMAND ${CMAKE_COMMAND} -DLIB=$<TARGET_FILE:loragen_shared> -DHEADERS=${CMAKE_SOURCE_DIR}/runtime/include
                   -P ${CMAKE_SOURCE_DIR}/tests/layout/check_exports.cmake)
endfunction()
