from ssm.encoders import SequenceEncoder as SequenceEncoder
from ssm.selective_scan import selective_scan as selective_scan
from ssm.selective_scan import selective_state_update as selective_state_update
