//! HBONE. Being implemented.
