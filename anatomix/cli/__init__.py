"""The ``anatomix`` command line. Commands are thin: parse, call the library, report."""
