"""The built-in teacher families (``teacher.kind``), one module each; registered in ``odedistill.kinds``."""
