# package.cmake — `cpack -G DEB` in the build dir makes riklet_<version>_amd64.deb: the binary, the
# Lua scripts, default policies and examples under /usr/share/riklet, /etc/riklet (conffiles), the
# systemd unit. Included from CMakeLists.txt.
set(RK_PKG ${CMAKE_SOURCE_DIR}/packaging)
install(FILES ${RK_PKG}/riklet.service DESTINATION lib/systemd/system)
install(FILES ${RK_PKG}/config.lua DESTINATION /etc/riklet)
install(FILES ${RK_PKG}/policies-README DESTINATION /etc/riklet/policies RENAME README)
install(FILES ${RK_PKG}/default DESTINATION /etc/default RENAME riklet)
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_PACKAGE_NAME riklet)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "riklet maintainers <riklet@rik-org.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "node agent of a RIK cluster: Pods (runc) and Functions (microVMs)")
set(CPACK_PACKAGE_DESCRIPTION "riklet runs on each worker node of a RIK cluster, takes instructions
from the RIK scheduler over gRPC, runs Pods (OCI containers under conmon and runc,
images pulled with skopeo and unpacked with umoci) and Functions (microVMs), wires
their network and reports their states and the node's metrics. It also runs with
no cluster, from a directory of workload manifests.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # riklet_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON) # the linked libraries (libc, libm, libcjson; LuaJIT, libnghttp2
# and libprotobuf-c are linked statically unless RIKLET_STATIC_DEPS=OFF)
# what riklet runs (not linked): the OCI tools; libcurl, libsystemd, libnl and libip4tc are loaded
# with dlopen
set(CPACK_DEBIAN_PACKAGE_DEPENDS "runc, conmon, skopeo, umoci, libcurl4, libsystemd0, libnl-3-200, libnl-route-3-200, libip4tc2")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "qemu-system-x86, iptables, curl")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${RK_PKG}/conffiles;${RK_PKG}/postinst;${RK_PKG}/prerm;${RK_PKG}/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_GENERATOR DEB)
include(CPack)
