import sys

from spattern.cli import main

sys.exit(main())
