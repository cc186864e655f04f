# Install rules and the find_package(zeroshard) package files.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS zeroshard zs_warnings EXPORT zeroshardTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/zeroshard)
if(ZS_HAVE_CUDA)
  install(TARGETS zs_nccl EXPORT zeroshardTargets)
endif()
install(TARGETS zsrun zsckpt zsmem RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY core kernels sharding optim offload runtime DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/zeroshard
        FILES_MATCHING PATTERN "*.h")
install(EXPORT zeroshardTargets NAMESPACE zeroshard:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/zeroshard)
configure_package_config_file(cmake/zeroshardConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/zeroshardConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/zeroshard)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/zeroshardConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/zeroshardConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/zeroshardConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/zeroshard)
