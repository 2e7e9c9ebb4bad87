import sys

from persam.cli import main

sys.exit(main())
