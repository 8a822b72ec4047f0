"""The built-in student kinds, one module each."""
