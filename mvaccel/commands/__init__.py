"""Sub-commands of the ``mvaccel`` CLI: one module each, discovered at start-up.

A module here defines ``register(subparsers)``, which adds its parser(s) with
``set_defaults(func=...)``; ``func(args)`` returns the exit code. Modules import their heavy
dependencies inside ``func`` so ``mvaccel --help`` stays fast.
"""
