"""The ``maw-gym`` subcommands, one module each: ``configure(parser)`` declares its arguments,
``run(args) -> int`` calls one library function and prints (CompilerGym's ``bin/`` style). The
libraries below (``maw_gym``, ``maw_gym_agents``, ``maw_gym_leaderboard``'s own modules) parse
no arguments and print no results."""
