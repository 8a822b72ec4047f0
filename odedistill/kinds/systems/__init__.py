"""The built-in system kinds (``system.kind``), one module each; registered in ``odedistill.kinds``."""
