import sys

from edgepack.cli import main

sys.exit(main())
