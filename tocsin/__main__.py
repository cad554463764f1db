import sys

from tocsin.daemon.cli import main

sys.exit(main())
