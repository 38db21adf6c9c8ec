import sys

from effnet.cli import main

sys.exit(main())
