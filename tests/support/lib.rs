//! Nothing to export: the root package exists for the integration tests beside this file.
