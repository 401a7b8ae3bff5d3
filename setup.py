"""Build glue: setuptools runs cffi's builder, which compiles the C core into poolalloc._native."""

from setuptools import setup

setup(cffi_modules=["native/build_ffi.py:ffibuilder"])
