"""The subcommands of ``lt-tuning``, one module each, each with ``main(args)``; :mod:`lt_tuning.cli` lists them."""
