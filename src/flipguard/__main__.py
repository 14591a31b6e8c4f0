import sys

from flipguard.cli import main

sys.exit(main())
