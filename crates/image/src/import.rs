//! Import of OCI layout and docker-save tarballs.
