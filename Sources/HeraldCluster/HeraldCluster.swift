import HeraldCore
import HeraldEtcd
import HeraldKafka
