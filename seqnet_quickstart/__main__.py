from seqnet_quickstart import main

main()
