from longvid.cli import main

main()
